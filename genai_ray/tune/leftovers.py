"""Placement groups a campaign's trials leave behind, released when the campaign ends.

Ray Train hands a run's placement group to its PlacementGroupCleaner only once the run's workers are up,
10-15 s after the group is made on a 2-core machine. A Train run whose owner dies inside that window (a
trial Tune stops while its run starts) keeps its group, and the group's CPUs, for as long as the driver's
job lives: tests/test_tune.py makes one such leak on purpose (Ray 2.60). Every trial's Train run belongs to
the campaign driver's job, so when Tune has finished, any placement group that job made since the campaign
began is a leftover nothing will use.
"""

from __future__ import annotations

import time

import ray
from ray._raylet import PlacementGroupID
from ray.util import placement_group_table
from ray.util.placement_group import PlacementGroup, remove_placement_group
from ray.util.state import list_placement_groups
from ray.util.state.exception import RayStateApiException

SETTLE_S = 10.0  # Ray Train's own cleaner polls every second; give it time before doing its job for it


def live_placement_groups() -> set[str]:
    """Ids of the cluster's placement groups that still reserve resources."""
    return {pg_id for pg_id, pg in placement_group_table().items() if pg["state"] != "REMOVED"}


def release_leftovers(before: set[str], settle_s: float = SETTLE_S) -> int:
    """Remove the placement groups this job made since ``before`` that are still reserved; return how many."""
    deadline = time.monotonic() + settle_s
    while (new := live_placement_groups() - before) and time.monotonic() < deadline:
        time.sleep(1.0)
    if not new:
        return 0
    try:  # on a shared cluster, other jobs' groups made meanwhile are not ours
        mine = new & _made_by(ray.get_runtime_context().get_job_id())
    except RayStateApiException as err:
        print(f"warning: {len(new)} placement group(s) made during the campaign are still reserved, and Ray's "
              f"State API can't say whose ({str(err).splitlines()[0][:120]}); check 'ray list placement-groups'",
              flush=True)
        return 0
    for pg_id in mine:
        remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_id)))
    return len(mine)


def _made_by(job_id: str) -> set[str]:
    groups = list_placement_groups(filters=[("creator_job_id", "=", job_id)], limit=10_000,
                                   raise_on_missing_output=False)
    return {pg.placement_group_id for pg in groups}
