# The genai-ray image for Ray clusters (KubeRay head and workers, Ray Jobs, RayService).
#   docker build -t REGISTRY/genai-ray:0.1.0 .            # GPU-ready: TensorFlow with its CUDA wheels
#   docker build --build-arg EXTRAS= -t REGISTRY/genai-ray:0.1.0-cpu .
# The base is Ray's own image: it has Ray 2.60 for Python 3.11, the `ray` user KubeRay expects, and the
# tools (bash, wget) that KubeRay's health probes run. CUDA comes from the tensorflow[and-cuda] wheels, so
# the non-GPU base works on GPU nodes too; the host only needs the NVIDIA driver.
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311
FROM ${BASE_IMAGE}

ARG EXTRAS=gpu
WORKDIR /home/ray/genai-ray
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users genai_ray ./genai_ray
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"
# The rest of the checkout (serve_configs/, cluster/, search spaces) that jobs and RayService refer to by
# path; .dockerignore keeps out tests, benchmarks, caches and virtual environments.
COPY --chown=ray:users . .

# Commands run inside the cluster join it (ray.init("auto")) instead of starting a private Ray.
ENV GENAI_RAY_ADDRESS=auto \
    PYTHONUNBUFFERED=1
