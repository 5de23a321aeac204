"""The gateway on a Redis Cluster (docs/CLUSTER.md "The gateway on a Cluster"), one module a
concern; on one server none of it runs.

- `hub`: `ClusterHub`, the hub with one log position and epoch per partition;
- `feed`, `session`: the price subscription, one connection and task per primary;
- `clients`, `reads`: the pooled clients of the primaries, and the reads of each partition;
- `resume`: resuming a stream from a vector of positions (default, ``replay=all``);
- `bar_feed`, `delayed`, `notices`, `ready`: bars, delayed entitlements, the named events
  and ``/api/ready`` partition by partition;
- `wiring`: what the app's lifespan opens on a Cluster.
"""
