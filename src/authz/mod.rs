//! Authorization: rate limits, the video catalogue and the policy that turns an identity
//! and a video into a permit (deny by default).

pub mod catalogue;
pub mod policy;
pub mod ratelimit;
