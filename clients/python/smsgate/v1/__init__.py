"""Generated stubs of the ``smsgate.v1`` API (do not edit; run ``make gen``)."""
