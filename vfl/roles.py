"""Role names used everywhere in vfl (see ``protocols/specs/glossary.md``)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role"]


class Role(StrEnum):
    """The three roles of hetero logistic regression.

    ``GUEST``
        Holds the label and some features ("active party" in the literature).
    ``HOST``
        Holds features only ("passive party"). There may be several.
    ``ARBITER``
        Holds the Paillier private key and decrypts masked values only.
    """

    GUEST = "guest"
    HOST = "host"
    ARBITER = "arbiter"
