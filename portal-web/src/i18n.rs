//! The page's words, Vietnamese first, English second.

/// A language the page speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Vi,
    En,
}

impl Lang {
    /// From a `lang` parameter or cookie; anything else is Vietnamese.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "vi" => Some(Lang::Vi),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    /// The other language, for the switch link.
    pub fn other(self) -> Self {
        match self {
            Lang::Vi => Lang::En,
            Lang::En => Lang::Vi,
        }
    }

    /// The name of this language in itself.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Vi => "Tiếng Việt",
            Lang::En => "English",
        }
    }

    pub fn t(self) -> &'static Words {
        match self {
            Lang::Vi => &VI,
            Lang::En => &EN,
        }
    }
}

/// Every sentence the page shows.
#[derive(Debug)]
pub struct Words {
    pub title: &'static str,
    pub skip: &'static str,
    pub intro: &'static str,
    pub login: &'static str,
    pub logout: &'static str,
    pub signed_in_as: &'static str,
    pub accesses: &'static str,
    pub none: &'static str,
    pub when: &'static str,
    pub agency: &'static str,
    pub system: &'static str,
    pub service: &'static str,
    pub purpose: &'static str,
    pub official: &'static str,
    pub result: &'static str,
    pub ends: &'static str,
    pub verification: &'static str,
    pub verified: &'static str,
    pub not_verified: &'static str,
    pub both_ends: &'static str,
    pub ok: &'static str,
    pub details: &'static str,
    pub withheld: &'static str,
    pub withheld_until: &'static str,
    pub unanswered: &'static str,
    pub failures: &'static str,
    pub unwitnessed: &'static str,
    pub filters: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub all_agencies: &'static str,
    pub apply: &'static str,
    pub download: &'static str,
    pub download_help: &'static str,
    pub previous: &'static str,
    pub next: &'static str,
    pub page: &'static str,
    pub back: &'static str,
    pub message_id: &'static str,
    pub logged_by: &'static str,
    pub consumer: &'static str,
    pub provider: &'static str,
    pub checkpoint: &'static str,
    pub witnessed_at: &'static str,
    pub leaf: &'static str,
    pub problem: &'static str,
    pub not_found: &'static str,
    pub too_many: &'static str,
    pub unavailable: &'static str,
    pub login_failed: &'static str,
    pub expired: &'static str,
    pub forbidden: &'static str,
    pub answer_of: &'static str,
}

static VI: Words = Words {
    title: "Ai đã xem dữ liệu của tôi?",
    skip: "Bỏ qua, đến nội dung chính",
    intro: "Mỗi lần một cơ quan nhà nước tra cứu dữ liệu của bạn qua Liên thông, cả hai bên đều ghi lại: ai, khi nào, vì sao. Đăng nhập bằng định danh điện tử để xem.",
    login: "Đăng nhập bằng định danh điện tử",
    logout: "Đăng xuất",
    signed_in_as: "Số định danh",
    accesses: "Các lần truy cập dữ liệu của bạn",
    none: "Không có lần truy cập nào.",
    when: "Thời điểm (UTC)",
    agency: "Cơ quan",
    system: "Hệ thống",
    service: "Dịch vụ",
    purpose: "Mục đích",
    official: "Cán bộ",
    result: "Kết quả",
    ends: "Hai đầu ghi nhận",
    verification: "Kiểm chứng",
    verified: "Đã kiểm chứng",
    not_verified: "Chưa kiểm chứng",
    both_ends: "cả hai đầu",
    ok: "Thành công",
    details: "Chi tiết",
    withheld: "bản ghi đang được giữ kín theo luật đến",
    withheld_until: "Giữ kín đến",
    unanswered: "Máy chủ không trả lời",
    failures: "Kiểm chứng thất bại",
    unwitnessed: "bản ghi mới hơn điểm kiểm tra đã được chứng thực (chưa kiểm chứng)",
    filters: "Lọc",
    from: "Từ ngày",
    to: "Đến ngày",
    all_agencies: "Tất cả cơ quan",
    apply: "Lọc",
    download: "Tải về kèm bằng chứng",
    download_help: "Tệp này kiểm chứng được mà không cần mạng: lienthong trace verify TỆP --anchor ANCHOR",
    previous: "Trang trước",
    next: "Trang sau",
    page: "Trang",
    back: "Quay lại danh sách",
    message_id: "Mã thông điệp",
    logged_by: "Ghi nhận bởi",
    consumer: "bên gọi",
    provider: "bên cung cấp",
    checkpoint: "Điểm kiểm tra",
    witnessed_at: "chứng thực lúc",
    leaf: "bản ghi số",
    problem: "Vấn đề",
    not_found: "Không tìm thấy.",
    too_many: "Bạn đã tra cứu quá nhiều lần. Vui lòng thử lại sau",
    unavailable: "Tạm thời không tra cứu được",
    login_failed: "Đăng nhập không thành công",
    expired: "Phiên đăng nhập đã hết hạn. Vui lòng đăng nhập lại.",
    forbidden: "Yêu cầu bị từ chối (thiếu mã chống giả mạo).",
    answer_of: "Kết quả tra cứu lúc",
};

static EN: Words = Words {
    title: "Who looked at my data?",
    skip: "Skip to the main content",
    intro: "Every time an agency looks up your data over Lienthong, both ends record who, when and why. Sign in with your electronic ID to see it.",
    login: "Sign in with your electronic ID",
    logout: "Sign out",
    signed_in_as: "Personal ID",
    accesses: "Accesses to your data",
    none: "No accesses.",
    when: "When (UTC)",
    agency: "Agency",
    system: "System",
    service: "Service",
    purpose: "Purpose",
    official: "Official",
    result: "Result",
    ends: "Logged by",
    verification: "Verification",
    verified: "Verified",
    not_verified: "Not verified",
    both_ends: "both ends",
    ok: "Success",
    details: "Details",
    withheld: "records withheld by law until",
    withheld_until: "Withheld until",
    unanswered: "Servers that did not answer",
    failures: "Verification failed",
    unwitnessed: "records are newer than their server's last witnessed checkpoint (not yet verified)",
    filters: "Filter",
    from: "From",
    to: "To",
    all_agencies: "All agencies",
    apply: "Filter",
    download: "Download with proofs",
    download_help: "The file can be checked offline: lienthong trace verify FILE --anchor ANCHOR",
    previous: "Previous page",
    next: "Next page",
    page: "Page",
    back: "Back to the list",
    message_id: "Message id",
    logged_by: "Logged by",
    consumer: "caller",
    provider: "provider",
    checkpoint: "Checkpoint",
    witnessed_at: "witnessed at",
    leaf: "record no.",
    problem: "Problem",
    not_found: "Not found.",
    too_many: "You have asked too often. Please try again in",
    unavailable: "The trace cannot be had right now",
    login_failed: "Sign-in failed",
    expired: "Your session has expired. Please sign in again.",
    forbidden: "Request refused (anti-forgery token missing).",
    answer_of: "Answer gathered at",
};
