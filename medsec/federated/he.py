"""Homomorphic aggregation with TenSEAL CKKS: hospitals encrypt, one hospital adds and decrypts.

Key model (as in NVFlare/FedML-HE): the hospitals share one CKKS key pair, provisioned out of
band (:func:`generate_keys`); the server gets only the *public* context and decrypts nothing.
Each client sends ``n_k * w_k`` (its weights times its example count) in chunks of
``poly_modulus_degree / 2`` slots with an HMAC tag (:func:`contribution_tag`, keyed by a hash
of the shared secret context, which the server lacks) binding the round, the sender and the
hospital named to decrypt that round. That hospital decrypts only a sum it formed itself from
at least ``minimum`` distinct, correctly tagged contributions (:func:`verified_sum`), once per
round; the plaintext aggregate is ``sum_k n_k w_k / sum_k n_k`` = FedAvg.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import numpy as np

from medsec.errors import MedSecError


class HEError(MedSecError, ValueError):
    """Ciphertexts or keys that do not fit together (the message says which)."""


@dataclass(frozen=True)
class HEKeys:
    """Serialized TenSEAL contexts: ``secret`` (hospitals only; None where a party must not
    hold it) and ``public`` (server)."""

    secret: bytes | None
    public: bytes
    slots: int


def generate_keys(poly_modulus_degree: int = 8192, scale_bits: int = 40) -> HEKeys:
    """A fresh CKKS key pair; precision ~1e-7 relative to values up to ~2**19."""
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly_modulus_degree,
                     coeff_mod_bit_sizes=[60, scale_bits, scale_bits, 60])
    ctx.global_scale = 2.0 ** scale_bits
    secret = ctx.serialize(save_secret_key=True, save_galois_keys=False,
                           save_relin_keys=False)
    ctx.make_context_public()
    public = ctx.serialize(save_galois_keys=False, save_relin_keys=False)
    return HEKeys(secret=secret, public=public, slots=poly_modulus_degree // 2)


def _context(serialized: bytes):
    import tenseal as ts

    return ts.context_from(serialized)


def is_private(serialized_context: bytes) -> bool:
    """Whether a serialized context holds a secret key."""
    return bool(_context(serialized_context).is_private())


def encrypt_vector(public_context: bytes, vector: np.ndarray, slots: int) -> list[bytes]:
    """Encrypt a float vector (N,) as serialized CKKS ciphertexts of ``slots`` values each
    (``slots`` = ``poly_modulus_degree / 2``; the last chunk may be shorter)."""
    import tenseal as ts

    ctx = _context(public_context)
    values = np.asarray(vector, dtype=np.float64)
    return [ts.ckks_vector(ctx, values[i:i + slots].tolist()).serialize()
            for i in range(0, len(values), slots)]


def sum_ciphertexts(context: bytes, updates: list[list[bytes]]) -> list[bytes]:
    """Chunk-wise homomorphic sum of the clients' ciphertext lists (no plaintext formed)."""
    import tenseal as ts

    if not updates:
        raise HEError("no encrypted updates to aggregate")
    lengths = {len(u) for u in updates}
    if len(lengths) != 1:
        raise HEError(f"clients sent different numbers of ciphertext chunks: {sorted(lengths)} "
                      "(different model sizes?)")
    ctx = _context(context)
    total = []
    for chunks in zip(*updates, strict=True):
        acc = ts.ckks_vector_from(ctx, chunks[0])
        for chunk in chunks[1:]:
            acc += ts.ckks_vector_from(ctx, chunk)
        total.append(acc.serialize())
    return total


def contribution_tag(secret_context: bytes, server_round: int, node: int, decryptor: int,
                     chunks: list[bytes]) -> bytes:
    """HMAC-SHA256 of (round, sender node, decrypting node, every chunk's SHA-256) under a key
    derived from the hospitals' secret context: only a key holder can make or check it."""
    key = hashlib.sha256(b"medsec-ckks-tag\0" + secret_context).digest()
    mac = hmac.new(key, f"{server_round}/{node}/{decryptor}".encode(), "sha256")
    for chunk in chunks:
        mac.update(hashlib.sha256(chunk).digest())
    return mac.digest()


def verified_sum(secret_context: bytes, server_round: int, decryptor: int, nodes: list[int],
                 tags: list[bytes], updates: list[list[bytes]], minimum: int) -> list[bytes]:
    """The homomorphic sum of ``updates``, once each is shown to be the tagged round-
    ``server_round`` contribution of a distinct node in ``nodes`` for ``decryptor``, and there
    are at least ``minimum`` of them; HEError ("refused: ...") otherwise."""
    if not len(nodes) == len(tags) == len(updates) or len(set(nodes)) != len(nodes):
        raise HEError("refused: contributions must come from distinct nodes, one tag each")
    if len(nodes) < minimum:
        raise HEError(f"refused: an aggregate of {len(nodes)} contribution(s) would reveal "
                      f"too much; at least {minimum} are required")
    for node, tag, chunks in zip(nodes, tags, updates, strict=True):
        if not hmac.compare_digest(bytes(tag), contribution_tag(
                secret_context, server_round, node, decryptor, chunks)):
            raise HEError(f"refused: node {node}'s ciphertext is not its tagged round-"
                          f"{server_round} contribution for node {decryptor}")
    return sum_ciphertexts(secret_context, updates)


def decrypt_vector(secret_context: bytes, chunks: list[bytes], size: int) -> np.ndarray:
    """Decrypt ciphertext chunks (with the hospitals' secret key) into a float64 vector (size,)."""
    import tenseal as ts

    ctx = _context(secret_context)
    if not ctx.is_private():
        raise HEError("decryption needs the hospitals' secret context, got a public one")
    out = np.concatenate([np.asarray(ts.ckks_vector_from(ctx, c).decrypt()) for c in chunks])
    if len(out) != size:
        raise HEError(f"decrypted {len(out)} values, the model has {size}")
    return out
