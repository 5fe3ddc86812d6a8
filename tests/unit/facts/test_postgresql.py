"""PostgreSQL facts read in one psql: every query of a batch is one `-c` of a single psql call, and the
answer is cut back at the breaks (the parsers themselves are table-driven in cases/postgresql.yml)."""

from vigil.core.facts import Batch
from vigil.facts.postgresql import QUERY_BREAK, database_fact, parse_database, parse_role, psql_query, role_fact


def test_queries_asked_in_one_psql_are_cut_at_the_breaks_and_a_failure_answers_none():
    facts = [role_fact("app"), database_fact("app")]
    batch = Batch.of(facts, nonce="n")
    assert batch.script.count("psql") == 1
    (role, _), (owner, _) = batch.outputs(f"@@n begin 0\nrole|SCRAM-SHA-256$x\n{QUERY_BREAK}\napp\n\n@@n end 0 0\n")
    assert parse_role(role, 0) == (True, "SCRAM-SHA-256$x") and parse_database(owner, 0) == "app"
    down = batch.outputs("@@n begin 0\npsql: error: connection refused\n\n@@n end 0 2\n")
    assert [parse_role(down[0][0], down[0][1]), parse_database(down[1][0], down[1][1])] == [None, None]


def test_a_query_of_ones_own_joins_the_same_psql():
    """psql_query is how a new PostgreSQL fact is made: its SQL rides along with the others'."""
    version = psql_query("postgresql:version", "show server_version_num", lambda stdout, status: int(stdout))
    batch = Batch.of([role_fact("app"), version], nonce="n")
    assert batch.script.count("psql") == 1 and "show server_version_num" in batch.script
    (_, _), (answer, status) = batch.outputs(f"@@n begin 0\nrole|x\n{QUERY_BREAK}\n170002\n\n@@n end 0 0\n")
    assert version.parse(answer, status) == 170002
