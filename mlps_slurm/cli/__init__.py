"""Click commands only: parse, call one function, print. Work is imported lazily so --help stays instant."""
