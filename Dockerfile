# mitotype as a grand-challenge algorithm container for MIDOG 2025 track 2 (atypical mitosis classification).
#
#   docker build -t mitotype-midog25 .                                  # CPU torch, the shipped default model
#   cp runs/x/model.pt my_model.pt && docker build -t mitotype-midog25 --build-arg MODEL=my_model.pt .  # another model
#   docker build -t mitotype-midog25-gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#
# scripts/container-check.sh builds the image with no public registry (a local Debian base, wheels from local
# folders), runs it with no network and a read-only /input as a non-root user, and compares its JSON with
# `mitotype challenge` on the host (docs/PREDICT.md).
#
# Local check with the challenge's example (the container gets no network, like on grand-challenge):
#   mkdir -p test/input/images/stacked-histopathology-roi-cropouts test/output && chmod 777 test/output
#   cp ../shared/data/midog25-track2-example/input/stack_5.tiff test/input/images/stacked-histopathology-roi-cropouts/
#   docker run --rm --network none -v "$PWD/test/input:/input:ro" -v "$PWD/test/output:/output" mitotype-midog25
#
# At run time /input is read-only, /tmp starts empty and there is no network: everything (code, torch,
# weights) is inside the image, and the model is loaded once at build time to prove it works offline.
# The model is in the image once, as /opt/app/model.pt: mitotype is installed from a wheel built without
# assets/default.pt, which becomes a link to /opt/app/model.pt when that is the shipped model (so `--model
# default` works too); with another MODEL the image has no default model.
ARG BASE=python:3.11-slim

# mitotype's wheel, without the shipped model (the image gets the model once, below)
FROM --platform=linux/amd64 ${BASE} AS wheel
# Optional pip configuration file for the build (local wheel folders, version constraints, a CA bundle), mounted
# by the builder, as scripts/container-check.sh does with podman; empty: pip's defaults. Not kept in the image.
ARG PIP_CONFIG_FILE=""
COPY pyproject.toml README.md /build/
COPY src /build/src
RUN sha256sum < /build/src/mitotype/assets/default.pt | cut -d" " -f1 > /build/default.sha256 \
    && rm /build/src/mitotype/assets/default.pt \
    && PIP_NO_CACHE_DIR=1 python -m pip wheel --no-deps -w /wheel /build && cp /build/default.sha256 /wheel/

FROM --platform=linux/amd64 ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_PACKAGES="torch torchvision"
ARG MODEL=src/mitotype/assets/default.pt
ARG PIP_CONFIG_FILE=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    MITOTYPE_CACHE=/tmp/mitotype \
    MPLCONFIGDIR=/tmp/matplotlib

# grand-challenge runs containers as a non-root user
RUN groupadd -r user && useradd -m --no-log-init -r -g user user
WORKDIR /opt/app

# torch first, from the wheel index chosen above (CPU wheels keep the image ~1 GB instead of ~6 GB)
RUN python -m pip install --index-url "${TORCH_INDEX}" ${TORCH_PACKAGES}

COPY --chown=user:user ${MODEL} /opt/app/model.pt
COPY --from=wheel /wheel /tmp/wheel
RUN python -m pip install /tmp/wheel/*.whl \
    && asset="$(python -c 'from mitotype.models.modelfile import default_model_path; print(default_model_path())')" \
    && if [ "$(sha256sum < /opt/app/model.pt | cut -d" " -f1)" = "$(cat /tmp/wheel/default.sha256)" ]; then \
           ln -s /opt/app/model.pt "$asset"; fi \
    && rm -rf /tmp/wheel

USER user
RUN python -c "from mitotype.models.modelfile import load_model; m = load_model('/opt/app/model.pt'); \
print('model ok:', m.config.model.encoder, 'threshold', round(m.threshold, 4))" \
    && mitotype challenge --help > /dev/null

ENTRYPOINT ["mitotype", "challenge", "--input", "/input", "--output", "/output", "--model", "/opt/app/model.pt"]
