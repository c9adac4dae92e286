"""Stands in for a machine without Triton (macOS, Windows): with this folder first on PYTHONPATH,
`import triton` fails as it does where the package is not installed. Used by .ci/run and tests."""
raise ModuleNotFoundError("No module named 'triton'", name="triton")
