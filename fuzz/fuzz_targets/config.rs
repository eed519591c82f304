#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::fuzzing::config::{Input, check};

fuzz_target!(|input: Input| check(input));
