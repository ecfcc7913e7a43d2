"""The suite's pytest plugins are loaded by pytest.ini (`-p fixtures.models -p fixtures.plugin`), so
that their command-line options (--subject, --checkpoint, --subject-file, --report-dir, --origin,
--allow-pickle, --device) are known however pytest is invoked; see fixtures/plugin.py."""
