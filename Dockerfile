# glm-image-server as a container image: `glm-image serve` on 0.0.0.0:8000, data in /data.
#   docker build -t glm-image .                                                          CUDA torch (default)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t glm-image:cpu .   CPU torch
# No CUDA base image is needed: the CUDA torch wheels bring the CUDA libraries as pip packages (nvidia-*,
# cuda-toolkit); the host needs only the NVIDIA driver and container toolkit (`docker run --gpus all`).
# The default index is CUDA 13.0 (what PyPI's torch 2.13.0 is built with; driver 580 or newer); an older
# driver: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 (or cu126).
# BASE must be Debian bookworm (its python3 is 3.11) or a derivative with apt and python3.11.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu130
ARG TORCH_VERSION=2.13.0
# pip's own variables, for builds behind a proxy or from a local mirror (e.g. PIP_CERT, PIP_FIND_LINKS,
# PIP_EXTRA_INDEX_URL, PIP_INDEX_URL); they stay in this stage, never in the image.
ARG PIP_CERT
ARG PIP_FIND_LINKS
ARG PIP_EXTRA_INDEX_URL
ARG PIP_INDEX_URL
ARG PIP_RETRIES
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/glm-image
ENV PATH=/opt/glm-image/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=60
# An empty build argument means "not set" to pip.
RUN for v in PIP_CERT PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_RETRIES; do \
        eval "[ -n \"\${$v:-}\" ] || unset $v"; done \
    && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md /src/
COPY src /src/src
# rapidocr-onnxruntime asks for opencv-python, nudenet for opencv-python-headless: both fill cv2/. Keep
# only the headless build (it needs no libGL or X libraries).
RUN for v in PIP_CERT PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_RETRIES; do \
        eval "[ -n \"\${$v:-}\" ] || unset $v"; done \
    && pip install /src \
    && headless="$(pip show opencv-python-headless | sed -n 's/^Version: //p')" \
    && pip uninstall -y opencv-python \
    && pip install --force-reinstall --no-deps "opencv-python-headless==${headless}" \
    && python -c "import cv2, onnxruntime, rapidocr_onnxruntime, nudenet, torch, glm_image_server"

FROM ${BASE}
# python3 for the venv; ca-certificates for HTTPS (input URLs, webhooks, the Hugging Face hub, S3).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin glm \
    && mkdir -p /data /home/glm/.cache/huggingface \
    && chown glm:glm /data /home/glm/.cache /home/glm/.cache/huggingface
COPY --from=build /opt/glm-image /opt/glm-image
ENV PATH=/opt/glm-image/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GLM_IMAGE_DATA_DIR=/data \
    GLM_IMAGE_CACHE_DIR=/home/glm/.cache/glm-image-server \
    HF_HOME=/home/glm/.cache/huggingface
USER glm
WORKDIR /home/glm
# The job database and generated files; the Hugging Face cache (real weights are downloaded once).
VOLUME ["/data", "/home/glm/.cache/huggingface"]
EXPOSE 8000
# Ready once a worker has loaded the model (real weights: minutes). Follows GLM_IMAGE_PORT and
# GLM_IMAGE_TLS / GLM_IMAGE_SSL_CERTFILE when the port or TLS is set through the environment.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 CMD ["python3", "-c", "import os, ssl, urllib.request as u; tls = os.environ.get('GLM_IMAGE_TLS') or os.environ.get('GLM_IMAGE_SSL_CERTFILE'); url = ('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('GLM_IMAGE_PORT', '8000') + '/ready'; u.urlopen(url, timeout=8, context=ssl._create_unverified_context())"]
ENTRYPOINT ["glm-image"]
CMD ["serve", "--host", "0.0.0.0"]
