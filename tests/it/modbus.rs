//! Modbus TCP and RTU against the pymodbus simulator (issue #5).
