"""What a dataset version becomes for people and trainers: exports in the formats trainers read (writer.py, with
the rows read from the store in rows.py and each format's layout in formats.py), and the offline HTML report
(report.py).

Uses: the store (read-only) and the job spec's sections; never Ray or a model.
"""

from seir.engine.export.formats import FORMATS
from seir.engine.export.report import write_diff_report, write_judge_eval_report, write_report
from seir.engine.export.rows import ExportError
from seir.engine.export.writer import ExportOptions, export, parse_splits

__all__ = ["FORMATS", "ExportError", "ExportOptions", "export", "parse_splits", "write_diff_report",
           "write_judge_eval_report", "write_report"]
