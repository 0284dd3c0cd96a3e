"""Train on a two-node ``ray.cluster_utils.Cluster`` with SPREAD placement; prints RESULT <json>.

Its own process and its own Ray, so it never touches the test session's Ray. Each simulated node has 3
CPUs and each worker reserves 2, so the two workers can only run on different nodes: success proves the
spread.
"""

import json
import sys

import ray
from ray.cluster_utils import Cluster

from genai_ray.config import build_config
from genai_ray.data.prepare import prepare
from genai_ray.data.sources import digits_source
from genai_ray.train.run import fit

store = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False})
cluster.add_node(num_cpus=3)
cluster.wait_for_nodes()
ray.init(address=cluster.address)
try:
    prepare(digits_source(None), f"{store}/datasets/digits", name="digits", progress=False, shards=2)
    cfg = build_config("tiny", {"train": {"workers": 2, "epochs": 1, "cpus_per_worker": 2, "placement": "SPREAD"}})
    result = fit(cfg, "digits", name="spread", store=store)
    alive = [n for n in ray.nodes() if n["Alive"]]
    print("RESULT " + json.dumps({"epochs": result.epochs, "nodes": len(alive), "package": result.package_uri,
                                  "step": result.metrics["step"]}), flush=True)
finally:
    ray.shutdown()
    cluster.shutdown()
