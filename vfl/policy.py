"""A party's own security policy: the limits it enforces on whatever its peers send.

Every party applies *its own* policy, never the one a peer announces: a host
decides how many of its rows it will score for validation, how large an ID set
it will run PSI against, how large a message it will buffer. The networked
runner reads it from the ``[security]`` table of the party's TOML; library
callers pass a :class:`SecurityPolicy` (defaults are the safe values).

See ``protocols/specs/threat_model.md`` for what each limit protects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from vfl.exceptions import ConfigError

__all__ = ["SecurityPolicy", "DEFAULT_POLICY", "MAX_KEY_BITS"]

#: Largest Paillier modulus any receiver accepts (bounds every ciphertext's size).
MAX_KEY_BITS = 8192


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """Limits one party enforces on its peers.

    Parameters
    ----------
    allow_insecure_key_size : bool
        Accept Paillier keys below 2048 bits (tests only).
    max_key_bits : int
        Largest Paillier modulus accepted from a peer (at most 8192).
    max_message_bytes : int
        Ceiling on any one message from a peer; the transport refuses a stream
        as soon as it passes the smaller of this and the job-derived limit,
        before buffering it.
    max_inbox_messages : int
        Messages from one peer buffered before the transport pushes back.
    max_psi_set_size : int
        Largest ID set a peer may announce (and then send) in PSI.
    max_validation_share : float
        Largest share of the aligned rows a host lets the guest hold out for
        validation (rows it encrypts scores for each epoch and does not train on;
        the scores reach only the arbiter, summed and shuffled).
    allow_training_scores : bool
        Host only: answer the guest's request to score every training row after
        training (reveals this host's partial score of every training customer).
    """

    allow_insecure_key_size: bool = False
    max_key_bits: int = MAX_KEY_BITS
    max_message_bytes: int = 1 << 30
    max_inbox_messages: int = 8
    max_psi_set_size: int = 20_000_000
    max_validation_share: float = 0.3
    allow_training_scores: bool = False

    def validate(self) -> SecurityPolicy:
        """Check every value; raise :class:`ConfigError` naming the first bad one."""
        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(f"The security setting {name!r} must be {want}. "
                               f"Got {getattr(self, name)!r} instead.")

        for name in ("allow_insecure_key_size", "allow_training_scores"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        checks = (("max_key_bits", 256, MAX_KEY_BITS), ("max_message_bytes", 1 << 16, 1 << 34),
                  ("max_inbox_messages", 1, 1024), ("max_psi_set_size", 1, 1 << 31))
        for name, lo, hi in checks:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise bad(name, f"an int in [{lo}, {hi}]")
        v = self.max_validation_share
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) \
                or not 0 <= v < 0.9:
            raise bad("max_validation_share", "a number in [0, 0.9)")
        return self

    def replace(self, **changes: object) -> SecurityPolicy:
        """A copy with some settings changed (validated)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"Unknown security settings: {', '.join(sorted(unknown))}.")
        return replace(self, **changes).validate()  # type: ignore[arg-type]

    @classmethod
    def names(cls) -> list[str]:
        """The setting names (the keys of the TOML ``[security]`` table)."""
        return [f.name for f in fields(cls)]


DEFAULT_POLICY = SecurityPolicy().validate()
