"""qh3 2.1.0: a stream's FIN never arrives when datagrams are reordered (qh3 alone).

100 streams: the client writes 111 bytes on each, then, once the server has all of them,
a FIN on each (a zero-length write). Datagrams are delayed 1-20 ms (so reordered), none
is lost. In about 4% of runs some FINs never reach the server's application while both
ends have nothing in flight and nothing to send: the connection sits idle until qh3's idle
timeout closes it ("stalled"). With the FIN in the same write as the data, or with
reordering but no delay spread (loss only), no run stalls in thousands.

Usage: python tests/upstream/qh3_reordered_fin_stall.py [FIRST_SEED LAST_SEED]  (default
0 2000). Exits 1 if any run stalls.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from qh3_sim import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("qh3: 100 streams, FIN after the data, 1-20 ms delay, no loss", "stalled", fin_later=True))
