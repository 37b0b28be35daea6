"""Recurring exports: schedules per site, each run an ordinary export job."""
