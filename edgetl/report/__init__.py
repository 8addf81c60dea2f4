"""The report of a build and everything that judges it: composition, sections, HTML, plots, budgets, regressions."""
