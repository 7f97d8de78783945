"""Write the synthetic two-bank data this example trains on.

    python make_data.py [--rows 8000]

Creates data/bank_a.csv (the guest: customer_id, default, 7 card features) and
data/bank_b.csv (the host: customer_id, 7 deposit/loan features), 75 % shared.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vfl.synthetic import make_two_banks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "data"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    guest, host = make_two_banks(args.rows)
    guest.to_csv(out / "bank_a.csv", index=False)
    host.to_csv(out / "bank_b.csv", index=False)
    print(f"wrote {out / 'bank_a.csv'} ({len(guest)} rows) and {out / 'bank_b.csv'} ({len(host)} rows)")


if __name__ == "__main__":
    main()
