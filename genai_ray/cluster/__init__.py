"""Running genai-ray on a Ray cluster: a local head for development, Ray Jobs and token authentication.

The library parts live here; ``genai_ray.cli.cluster`` is the thin command layer over them. The cluster
definitions themselves (launcher YAML, KubeRay manifests) live in the repository's ``cluster/`` folder.
"""
