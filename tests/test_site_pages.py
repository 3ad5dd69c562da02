"""The site's own pages without a browser: the landing table's labels, order and rounding, the run's verdict
(escaped, and absent when the run has none), and the course's metadata from one file."""

import pytest

from isp_support.evaluate.scoring import METHODS
from isp_support.site import Course, load_course, plain
from isp_support.site.course import CourseError, conf_py
from isp_support.site.pages import VERDICT_HEADING, landing

NAN = float("nan")
TABLE = {"paired_l1": {"psnr": 23.16660594, "psnr sd": NAN, "ssim": 0.79104831, "delta_e2000": 7.04970347,
                       "parameters": 7055, "seeds": 1},
         "floor": {"psnr": 12.6092766, "psnr sd": NAN, "ssim": 0.579659551, "delta_e2000": 27.065083312,
                   "parameters": 0, "seeds": 1},
         "ot": {"psnr": 18.28945461, "psnr sd": 1.42804596, "ssim": 0.72861380, "ssim sd": 0.04753207,
                "delta_e2000": 14.4206946, "delta_e2000 sd": 2.71571750, "parameters": 7055, "seeds": 3},
         "<b>mine</b>": {"psnr": 1.0}}
METRICS = {"table": TABLE, "split": "test", "scenes": 8, "patches": 165, "seeds": [0, 1, 2]}


def table_rows(page: str) -> list[str]:
    start = page.index("| method |")
    return [line for line in page[start:].splitlines() if line.startswith("| ")][1:]


def test_the_table_shows_labels_in_the_runs_order_with_rounded_scores():
    rows = table_rows(landing(METRICS, ["06_evaluate"], ["floor", "ot", "paired_l1"]))
    labels = [row.split(" | ")[0].lstrip("| ") for row in rows]
    assert labels[:3] == [plain(METHODS[k].label) for k in ("floor", "ot", "paired_l1")]
    assert "mine" in labels[3] and "<b>" not in labels[3]  # a key the series does not know: shown, escaped
    assert "| 12.61 | 0.580 | 27.07 | 0 | 1 |" in rows[0]
    assert "| 18.29 ± 1.43 | 0.729 ± 0.048 | 14.42 ± 2.72 | 7,055 | 3 |" in rows[1]
    assert "0.579660" not in "".join(rows) and "not set" not in "".join(rows)


def test_without_the_runs_order_the_table_keeps_the_records_order():
    rows = table_rows(landing(METRICS, ["06_evaluate"]))
    assert [row.split(" | ")[1] for row in rows[:3]] == ["23.17", "12.61", "18.29 ± 1.43"]


def test_the_verdict_is_shown_escaped_under_its_heading_and_only_when_the_run_has_one():
    assert VERDICT_HEADING not in landing(METRICS, ["06_evaluate"])
    assert VERDICT_HEADING not in landing({**METRICS, "verdict": []}, ["06_evaluate"])
    verdict = ["OT pseudo-pairs beat kNN ones: 18.29 dB against 14.65 dB.",
               "<script>alert(1)</script> [a](/etc/passwd) ```{include} /etc/passwd"]
    page = landing({**METRICS, "verdict": verdict}, ["06_evaluate"])
    after = page[page.index(f"## {VERDICT_HEADING}"):]
    assert page.index("| method |") < page.index(VERDICT_HEADING)
    assert "OT pseudo\\-pairs beat kNN ones\\: 18.29 dB against 14.65 dB." in after
    assert "<script>" not in after and "](/etc" not in after and "```{" not in after


def test_the_course_file_names_the_author_and_course_and_its_absence_reads_well(tmp_path):
    path = tmp_path / "course.toml"
    path.write_text('name = "Computational Photography"\nauthor = "A. <Teacher>"\nterm = "Spring 2027"\n'
                    'url = "https://example.org/course"\n')
    course = load_course(path)
    assert course.byline() == "Computational Photography · Spring 2027 · by A. <Teacher>"
    conf = conf_py("Title", course)
    assert "author = 'A. <Teacher>'" in conf and "A. &lt;Teacher&gt;" not in conf.split("author =")[0]
    assert 'href="https://example.org/course"' in conf and "Computational Photography · Spring 2027" in conf
    page = landing(METRICS, ["06_evaluate"], course=course)
    assert "Computational Photography" in page and "<Teacher>" not in page
    bare = conf_py("Title", Course())
    assert "author = ''" in bare and "not set" not in bare and "Course notes built" in bare
    assert Course().byline() == ""
    assert landing(METRICS, ["06_evaluate"], course=Course()) == landing(METRICS, ["06_evaluate"])


@pytest.mark.parametrize("text, message", [('writer = "x"', "unknown field"), ("name = 3", "must be text"),
                                           ('url = "javascript:alert(1)"', "http"), ("name = ", "cannot read")])
def test_a_course_file_with_a_wrong_field_is_refused_by_name(tmp_path, text, message):
    path = tmp_path / "course.toml"
    path.write_text(text)
    with pytest.raises(CourseError, match=message):
        load_course(path)


def test_the_projects_course_file_is_valid():
    from .conftest import REPO

    load_course(REPO / "course.toml")
