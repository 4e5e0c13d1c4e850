"""Structured answers: the declared schema, checking, repair turns, typed columns."""
