-- PostgreSQL dialect of ../0004_exception_resolution.sql (types only differ).
-- Who resolved an exception by hand (the web UI's resolve action); empty when the collector
-- resolved it itself because the cause went away.
ALTER TABLE exceptions ADD COLUMN resolved_by TEXT COLLATE "C" NOT NULL DEFAULT '';
