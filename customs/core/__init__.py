"""The ground floor: settings, time, reference data, the database engine and sessions, finding a declaration."""
