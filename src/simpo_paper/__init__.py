"""`make paper`: the SimPO paper's comparisons reproduced at tiny scale on the demo's task (CPU, offline)."""
