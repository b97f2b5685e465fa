"""The close codes, as the protocol layer names them: the registry itself lives on the lowest
floor (:mod:`connet_core.codes`), so that :mod:`connet_core.errors` can use it without
importing upward."""

from connet_core.codes import CloseCode

__all__ = ["CloseCode"]
