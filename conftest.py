"""The claims plugin (subjects, records, report) and the model fixtures, for every test in the suite."""
pytest_plugins = ["fixtures.models", "fixtures.plugin"]
