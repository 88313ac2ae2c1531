"""SMS vendor adapters behind one small interface (``providers.base.Provider``)."""
