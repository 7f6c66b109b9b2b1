//! Generated, realistic Vietnamese registry data for the demo: citizens of
//! the population registry and their tax records. Deterministic, so every
//! run tells the same story.

/// A citizen as the population registry knows them.
#[derive(Debug, Clone)]
pub struct Citizen {
    /// 12-digit citizen ID (CCCD): province, gender-and-century digit,
    /// year of birth, serial.
    pub personal_id: String,
    pub full_name: String,
    pub date_of_birth: String,
    pub gender: &'static str,
    pub permanent_address: String,
    pub tax_code: String,
    pub outstanding_tax_vnd: u64,
}

const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
];
const MIDDLE_F: &[&str] = &["Thị", "Ngọc", "Thanh", "Thu", "Minh"];
const MIDDLE_M: &[&str] = &["Văn", "Hữu", "Minh", "Đức", "Quang"];
const GIVEN_F: &[&str] = &[
    "Lan", "Hoa", "Mai", "Linh", "Trang", "Thảo", "Hạnh", "Vy", "Phương", "Hà",
];
const GIVEN_M: &[&str] = &[
    "An", "Bình", "Dũng", "Hùng", "Long", "Nam", "Quân", "Sơn", "Tuấn", "Hải",
];
const STREETS: &[(&str, &str, &str, &str)] = &[
    (
        "001",
        "phố Hàng Bạc",
        "phường Hàng Đào, quận Hoàn Kiếm",
        "Hà Nội",
    ),
    ("001", "phố Kim Mã", "phường Kim Mã, quận Ba Đình", "Hà Nội"),
    (
        "001",
        "đường Láng",
        "phường Láng Thượng, quận Đống Đa",
        "Hà Nội",
    ),
    (
        "079",
        "đường Nguyễn Huệ",
        "phường Bến Nghé, quận 1",
        "Thành phố Hồ Chí Minh",
    ),
    (
        "079",
        "đường Võ Văn Tần",
        "phường Võ Thị Sáu, quận 3",
        "Thành phố Hồ Chí Minh",
    ),
    (
        "048",
        "đường Bạch Đằng",
        "phường Hải Châu 1, quận Hải Châu",
        "Đà Nẵng",
    ),
    (
        "031",
        "đường Lạch Tray",
        "phường Lạch Tray, quận Ngô Quyền",
        "Hải Phòng",
    ),
];

/// The founder of the demo's scenario.
pub const FOUNDER_ID: &str = "001190012345";

/// Small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

/// The demo's citizens: the founder first, then `n - 1` others.
pub fn citizens(n: usize) -> Vec<Citizen> {
    let mut out = vec![Citizen {
        personal_id: FOUNDER_ID.into(),
        full_name: "Nguyễn Thị Lan".into(),
        date_of_birth: "1990-05-14".into(),
        gender: "Nữ",
        permanent_address: "Số 12 phố Hàng Bạc, phường Hàng Đào, quận Hoàn Kiếm, Hà Nội".into(),
        tax_code: "8012345678".into(),
        outstanding_tax_vnd: 0,
    }];
    let mut rng = Rng(0x5eed_1ab0_2026);
    while out.len() < n {
        let female = rng.next().is_multiple_of(2);
        let year = 1950 + rng.next() % 55;
        let (province, street, ward, city) = *rng.pick(STREETS);
        let century_gender = match (year >= 2000, female) {
            (false, false) => 0,
            (false, true) => 1,
            (true, false) => 2,
            (true, true) => 3,
        };
        let serial = rng.next() % 1_000_000;
        let id = format!("{province}{century_gender}{:02}{serial:06}", year % 100);
        let name = format!(
            "{} {} {}",
            rng.pick(FAMILY),
            if female {
                rng.pick(MIDDLE_F)
            } else {
                rng.pick(MIDDLE_M)
            },
            if female {
                rng.pick(GIVEN_F)
            } else {
                rng.pick(GIVEN_M)
            }
        );
        out.push(Citizen {
            personal_id: id,
            full_name: name,
            date_of_birth: format!(
                "{year}-{:02}-{:02}",
                1 + rng.next() % 12,
                1 + rng.next() % 28
            ),
            gender: if female { "Nữ" } else { "Nam" },
            permanent_address: format!("Số {} {street}, {ward}, {city}", 1 + rng.next() % 200),
            tax_code: format!("{}", 8_000_000_000 + rng.next() % 999_999_999),
            outstanding_tax_vnd: if rng.next().is_multiple_of(5) {
                (rng.next() % 50) * 100_000
            } else {
                0
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citizens_are_well_formed_and_stable() {
        let a = citizens(50);
        let b = citizens(50);
        assert_eq!(a.len(), 50);
        assert_eq!(a[0].personal_id, FOUNDER_ID);
        for c in &a {
            assert_eq!(c.personal_id.len(), 12, "{}", c.personal_id);
            assert!(c.personal_id.chars().all(|ch| ch.is_ascii_digit()));
            assert_eq!(c.full_name.split(' ').count(), 3);
        }
        assert_eq!(a[7].full_name, b[7].full_name, "deterministic");
    }
}
