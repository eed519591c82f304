#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::fuzzing::rewrite::{Input, Planting, check};

fuzz_target!(|input: Input| check(input, Planting::Anywhere));
