"""The paper's outputs: Tables 1-3 (markdown), Figures 4-6 and CMC curves (PNG), MLflow artifacts.

Tables are built only from metrics.json files; the paper's reported numbers live in
paper_numbers.yaml. ``reid.report.cli.add_report_commands`` registers the ``python -m reid`` verbs.
"""
