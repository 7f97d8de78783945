"""A small trained two-bank model, its parts on disk, and the federation's certificates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from vfl.certs import write_party_certs
from vfl.data import PartyTable, load_table
from vfl.lr.config import TrainConfig
from vfl.model import ModelPart, load_model_part


@dataclass
class Trained:
    root: Path
    model_dir: Path
    guest_part: ModelPart
    host_part: ModelPart
    guest: PartyTable
    host: PartyTable
    guest_csv: Path
    host_csv: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    from vfl.pipeline import fit_files
    from vfl.synthetic import make_two_banks

    root = tmp_path_factory.mktemp("served-model")
    g, h = make_two_banks(600, 0.8, seed=11)
    g.to_csv(root / "bank_a.csv", index=False)
    h.to_csv(root / "bank_b.csv", index=False)
    config = TrainConfig(epochs=3, batch_size=128, key_bits=512, allow_insecure_key_size=True,
                         validation_fraction=0.2)
    fit_files(root / "bank_a.csv", [root / "bank_b.csv"], id_column="customer_id",
              label="default", out_dir=root / "model", config=config, html_report=False)
    return Trained(root, root / "model", load_model_part(root / "model" / "guest.json"),
                   load_model_part(root / "model" / "host1.json"),
                   load_table(root / "bank_a.csv", id_column="customer_id",
                              label_column="default"),
                   load_table(root / "bank_b.csv", id_column="customer_id"),
                   root / "bank_a.csv", root / "bank_b.csv")


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("serving-pki")
    write_party_certs(d, ["guest", "host1", "outsider"])
    return d
