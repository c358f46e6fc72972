"""Benchmark side of vbench: the clock (clock.py), the machine description (sysinfo.py), the
results.json schema and writer (results.py), the compliance rules (compliance_keys.py), and the
score and report commands. The rules are in docs/PROTOCOL.md."""
