"""The run record and its renderings: the tables both reports show, markdown, HTML, MLflow tracking."""
