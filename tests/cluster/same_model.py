"""Whether two model.pt files hold the same weights, tensor for tensor: for tests/cluster/run.sh.

    python same_model.py REFERENCE/model.pt OTHER/model.pt

Prints `equal (N tensors)` and exits 0, or `differ in K of N tensors: [names]` and exits 1
(a file that cannot be read: its error, exit 2). Compares the `state_dict` of each (torch.equal:
same shape, dtype and every value), not the files' bytes, which also hold each run's provenance.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import torch

    try:
        a, b = (torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in argv[:2])
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not raised
        print(f"cannot compare: {type(e).__name__}: {e}")
        return 2
    diff = sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k]))
    print(f"equal ({len(a)} tensors)" if not diff else f"differ in {len(diff)} of {len(a)} tensors: {diff[:3]}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
