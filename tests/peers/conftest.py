"""The peer round trips (``make test-peers``): run in ``.venv-peers``, where the real SAELens and sparsify are
installed beside sarm. Each test adds its row to ``ROWS``; the table is printed after the run."""

from __future__ import annotations

import pytest

ROWS: list[tuple] = []  # (SAE, direction, max |Δ encode|, max |Δ decode|, max |latent|, max |x̂|)


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    from importlib.metadata import version

    write = terminalreporter.write_line
    write("")
    write(f"SAE round trips against SAELens {version('sae-lens')} and sparsify {version('eai-sparsify')}:")
    write(f"| {'SAE':<44} | {'direction':<21} | max abs Δ encode | max abs Δ decode | max abs latent | max abs x̂ |")
    write(f"|{'-' * 46}|{'-' * 23}|------------------|------------------|----------------|-----------|")
    for sae, direction, encode, decode, latent, x_hat in ROWS:
        write(f"| {sae:<44} | {direction:<21} | {encode:16.2e} | {decode:16.2e} | {latent:14.1f} | {x_hat:9.1f} |")


@pytest.fixture
def record():
    """record(sae, direction, latents, their latents, reconstruction, theirs): one row of the printed table,
    and whether both differences are within ``tolerance`` of the values' own scale (float32 carries ~7 digits:
    at |x̂| ≈ 40 one unit in the last place is 4e-6)."""

    def add(sae: str, direction: str, f, f_theirs, x_hat, x_hat_theirs, tolerance: float = 1e-5) -> bool:
        encode = float((f.double() - f_theirs.double()).abs().max())
        decode = float((x_hat.double() - x_hat_theirs.double()).abs().max())
        latent, scale = float(f.abs().max()), float(x_hat.abs().max())
        ROWS.append((sae, direction, encode, decode, latent, scale))
        return encode <= tolerance * max(1.0, latent) and decode <= tolerance * max(1.0, scale)

    return add
