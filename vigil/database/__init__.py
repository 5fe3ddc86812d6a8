"""The database cluster (three or more database hosts under Patroni): its status and the operator's levers."""
