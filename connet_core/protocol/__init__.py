"""The sans-I/O protocol: messages, codec, framing, close codes (see docs/protocol.md).

``streams.MessageStream`` is the thin async glue over a transport stream; it is exported here
too, and imports only the transport seam's Protocol classes (no QUIC library).
"""

from connet_core.protocol.codec import MAX_FRAME_SIZE, Message, decode, encode, tag_of
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.framing import HEADER_SIZE, MAX_BUFFERED, FrameDecoder, frame
from connet_core.protocol.messages import MESSAGE_TYPES, NESTED_TYPES
from connet_core.protocol.streams import MessageStream

__all__ = [
    "CloseCode",
    "FrameDecoder",
    "HEADER_SIZE",
    "MAX_BUFFERED",
    "MAX_FRAME_SIZE",
    "MESSAGE_TYPES",
    "Message",
    "MessageStream",
    "NESTED_TYPES",
    "decode",
    "encode",
    "frame",
    "tag_of",
]
