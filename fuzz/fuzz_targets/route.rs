#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::fuzzing::route::{Input, check};

fuzz_target!(|input: Input| check(input));
