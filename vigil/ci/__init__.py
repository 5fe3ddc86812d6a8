"""CI/CD: the app repository's GitHub Actions workflow, built as data (`invoke ci.workflow`)."""
