"""The executor's tests run against the installed package (a wheel built
by maturin, or ``maturin develop``); see the README."""
