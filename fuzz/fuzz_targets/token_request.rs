#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::fuzzing::token_request::{Input, check};

fuzz_target!(|input: Input| check(input));
