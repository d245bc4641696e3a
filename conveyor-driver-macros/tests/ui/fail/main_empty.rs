conveyor_driver::main!();
