"""Report writers: report.json (versioned schema), report.html, and the whole output folder."""

from workers.report.schema import REPORT_SCHEMA_VERSION, ReportValidationError, validate_report
from workers.report.settings import OutputSettings
from workers.report.write import write_outputs

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "OutputSettings",
    "ReportValidationError",
    "validate_report",
    "write_outputs",
]
