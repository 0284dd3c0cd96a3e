"""Prepare one folder twice: on a 1-CPU Ray, then on a two-node ``ray.cluster_utils.Cluster``; prints RESULT <json>.

Its own process and its own Rays, so it never touches the test session's Ray. Each node of the cluster has
1 CPU, so decoding on both nodes shows that Ray Data spread the work. The test compares the two splits.
"""

import json
import sys

import ray
from ray.cluster_utils import Cluster

from genai_ray.data.ingest import open_store_source, prepare_store

source, out = sys.argv[1], sys.argv[2]


def run(name: str) -> dict:
    src = open_store_source(source, image_size=8, crop=True, seed=3, holdout=0.25)
    manifest, report = prepare_store(src, f"{out}/{name}", name=name, progress=False)
    return {"nodes": dict(report.nodes), "count": manifest.count}


ray.init(num_cpus=1, include_dashboard=False)
one = run("one-cpu")
ray.shutdown()
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address)
try:
    two = run("two-nodes")
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    print("RESULT " + json.dumps({"one": one, "two": two, "alive": alive}), flush=True)
finally:
    ray.shutdown()
    cluster.shutdown()
