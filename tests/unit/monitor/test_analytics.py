"""monitor.analytics' side here: a fetched report saved 0600 and summed up from GoAccess's JSON."""

import json
import stat

from vigil.monitor.analytics import BUILD_AND_READ, save

GOACCESS = {
    "general": {"start_date": "05/Dec/2026", "end_date": "05/Dec/2026", "total_requests": 12, "unique_visitors": 3},
    "requests": {"data": [{"data": "/", "hits": {"count": 4}}, {"data": "/api/prayers", "hits": {"count": 7}},
                          {"data": "/api/health", "hits": {"count": 1}}]},
}


def test_a_fetched_report_is_kept_private_and_its_top_pages_come_first(tmp_path):
    report = save(tmp_path, "web1", json.dumps(GOACCESS), "<html>report</html>")
    assert report.html == tmp_path / "web1.html" and report.html.read_text() == "<html>report</html>"
    assert stat.S_IMODE((tmp_path / "web1.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(report.html.stat().st_mode) == 0o600
    assert report.top_pages == [("/api/prayers", 7), ("/", 4), ("/api/health", 1)]
    assert report.figures["unique_visitors"] == 3


def test_an_empty_log_gives_an_empty_report_not_an_error(tmp_path):
    report = save(tmp_path, "web2", json.dumps({"general": {"total_requests": 0}}), "<html></html>")
    assert report.top_pages == [] and report.figures["total_requests"] == 0


def test_one_command_builds_and_reads_both_files():
    # Values travel as "$1" and "$2", never inside the text.
    assert BUILD_AND_READ.count('"$1"') == 1 and BUILD_AND_READ.count('"$2/latest.') == 2
