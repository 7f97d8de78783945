"""The library API end to end: PSI, then training, then scoring — three roles in threads.

Run:  python examples/library_api.py
(uses 1024-bit keys through the explicit insecure flag so it finishes in seconds;
drop the flag and ``key_bits`` for the 2048-bit default)
"""

from __future__ import annotations

import threading

from vfl import Arbiter, GuestLogisticRegression, HostLogisticRegression, InMemoryNetwork
from vfl.data import load_table
from vfl.metrics import evaluate
from vfl.psi import run_psi_guest, run_psi_host
from vfl.synthetic import make_two_banks


def main() -> None:
    guest_df, host_df = make_two_banks(4000)
    guest = load_table(guest_df, id_column="customer_id", label_column="default")
    host = load_table(host_df, id_column="customer_id")

    # 1. private set intersection: each side ends with its own rows, in one common order
    net = InMemoryNetwork(["guest", "host"])
    rows: dict[str, object] = {}
    t = threading.Thread(target=lambda: rows.__setitem__(
        "host", run_psi_host(net.endpoint("host"), host.ids, "guest")))
    t.start()
    rows["guest"] = run_psi_guest(net.endpoint("guest"), guest.ids, ["host"])
    t.join()
    g, h = guest.take(rows["guest"]), host.take(rows["host"])
    print(f"intersection: {g.n_rows} customers")

    # 2. training: each role with its own data and channel
    net = InMemoryNetwork(["guest", "host", "arbiter"])
    host_model = HostLogisticRegression(allow_insecure_key_size=True)
    arbiter = Arbiter(allow_insecure_key_size=True)

    def host_role() -> None:
        host_model.fit(h.X, channel=net.endpoint("host"))
        host_model.serve_scores(h.X, channel=net.endpoint("host"))  # 3. answer scoring

    threads = [threading.Thread(target=host_role),
               threading.Thread(target=arbiter.run, kwargs={"channel": net.endpoint("arbiter")})]
    for th in threads:
        th.start()
    guest_model = GuestLogisticRegression(epochs=5, batch_size=512, key_bits=1024,
                                          allow_insecure_key_size=True)
    guest_model.fit(g.X, g.y, channel=net.endpoint("guest"), hosts=["host"])
    proba = guest_model.predict_proba(g.X, channel=net.endpoint("guest"))[:, 1]
    for th in threads:
        th.join()
    print("loss per epoch:", [round(v, 4) for v in guest_model.loss_history_])
    print("guest weights:", dict(zip(g.feature_names, guest_model.coef_.round(3).tolist(), strict=False)))
    print("metrics on the training intersection:", evaluate(g.y, proba))


if __name__ == "__main__":
    main()
