"""Pseudonymous patient / study / site keys for ``prepared/`` (never the raw identifiers).

With a de-identification key (``$MEDSEC_DEID_KEY`` or ``$MEDSEC_DEID_KEY_FILE``, see
:mod:`medsec.data.deid`) a key is HMAC-SHA256(key, ``kind:value``), 16 hex digits, prefixed
``P``/``S``/``T`` (patient, study, site): stable across runs and machines that share the key,
unlinkable without it. Without a key it is a plain SHA-256 of ``medsec:kind:value`` (not
secret: someone holding a candidate identifier can confirm it); ``method`` says which was used
and the data stage records it in ``dataset.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from medsec.errors import ConfigError

PREFIX = {"patient": "P", "study": "S", "site": "T"}


def make_pseudonymizer() -> tuple[Callable[[str, str], str], str]:
    """(``pseudo(kind, value) -> key``, method description)."""
    from medsec.data.deid import Pseudonymizer, load_key

    try:
        keyed = Pseudonymizer(load_key())
    except ConfigError:
        def plain(kind: str, value: str) -> str:
            digest = hashlib.sha256(f"medsec:{kind}:{value}".encode()).hexdigest()
            return PREFIX[kind] + digest[:16]

        return plain, "sha256 (unkeyed: set MEDSEC_DEID_KEY for keyed HMAC pseudonyms)"

    def hmac_key(kind: str, value: str) -> str:
        return PREFIX[kind] + keyed.digest(kind, value)[:16]

    return hmac_key, "hmac-sha256 (MEDSEC_DEID_KEY)"
