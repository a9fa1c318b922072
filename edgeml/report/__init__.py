"""The run record and its renderings: markdown, HTML, MLflow tracking."""
