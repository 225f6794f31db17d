//! Guard: echo.
