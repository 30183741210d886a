"""Homomorphic aggregation with TenSEAL CKKS: clients encrypt, the server adds ciphertexts.

Key model (as in NVFlare/FedML-HE): the hospitals share one CKKS key pair, provisioned out of
band (:func:`generate_keys`). The server only gets the *public* context (no secret key), so
it can add ciphertexts but decrypt nothing; the encrypted sum goes back to one hospital,
which decrypts only that aggregate. Each client sends ``n_k * w_k`` (its weights times its
example count) in chunks of ``poly_modulus_degree / 2`` slots; the plaintext aggregate is
``sum_k n_k w_k / sum_k n_k`` = FedAvg.
"""

from __future__ import annotations

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


def sum_ciphertexts(public_context: bytes, updates: list[list[bytes]]) -> list[bytes]:
    """Chunk-wise homomorphic sum of the clients' ciphertext lists (the server's whole job).

    Works on the public context only: no plaintext update is ever formed here.
    """
    import tenseal as ts

    if not updates:
        raise HEError("no encrypted updates to aggregate")
    lengths = {len(u) for u in updates}
    if len(lengths) != 1:
        raise HEError(f"clients sent different numbers of ciphertext chunks: {sorted(lengths)} "
                      "(different model sizes?)")
    ctx = _context(public_context)
    if ctx.is_private():
        raise HEError("the aggregation context holds a secret key: give the server the "
                      "public context only")
    total = []
    for chunks in zip(*updates, strict=True):
        acc = ts.ckks_vector_from(ctx, chunks[0])
        for chunk in chunks[1:]:
            acc += ts.ckks_vector_from(ctx, chunk)
        total.append(acc.serialize())
    return total


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
