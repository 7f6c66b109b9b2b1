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

/// A word of the operators' consoles in both languages. The consoles show
/// both together, Vietnamese first and English second: officers and
/// operators work in Vietnamese, while the command line, runbooks and
/// vendors' manuals they compare with speak English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Both {
    pub vi: &'static str,
    pub en: &'static str,
}

impl Both {
    /// "vi · en", for a page's title.
    pub fn title(self) -> String {
        format!("{} · {}", self.vi, self.en)
    }
}

/// The consoles' words (see [`Both`]).
pub mod console {
    use super::Both;

    macro_rules! words {
        ($($name:ident = $vi:literal / $en:literal;)*) => {
            $(pub const $name: Both = Both { vi: $vi, en: $en };)*
        };
    }

    words! {
        REQUESTS = "Yêu cầu đăng ký" / "Registration requests";
        MEMBERS = "Thành viên" / "Members";
        SERVERS = "Máy chủ an ninh" / "Security servers";
        SERVICES = "Dịch vụ và nhóm" / "Services and groups";
        TRUSTED_CAS = "CA tin cậy" / "Trusted CAs";
        TOKENS = "Mã ghi danh" / "Enrollment tokens";
        ALARMS = "Cảnh báo nhân chứng" / "Witness alarms";
        AUDIT = "Nhật ký thao tác" / "Audit log";
        STATUS = "Trạng thái" / "Status";
        CLIENTS = "Hệ thống khách" / "Clients";
        BACKENDS = "Dịch vụ và máy chủ nghiệp vụ" / "Services and backends";
        ACCESS = "Quyền truy cập" / "Access rights";
        OPERATIONS = "Giao dịch" / "Operations";
        MESSAGE_LOG = "Nhật ký thông điệp" / "Message log";
        ADD_MEMBER = "Thêm thành viên" / "Add a member";
        ADD_SUBSYSTEM = "Thêm hệ thống con" / "Add a subsystem";
        MEMBER = "Thành viên" / "Member";
        MEMBER_CLASS = "Loại thành viên" / "Member class";
        MEMBER_CODE = "Mã thành viên" / "Member code";
        MEMBER_NAME = "Tên thành viên" / "Member name";
        SUBSYSTEM_CODE = "Mã hệ thống con" / "Subsystem code";
        SUBSYSTEMS = "Hệ thống con" / "Subsystems";
        SIGNING_CERTS = "Chứng thư ký" / "Signing certificates";
        ADDRESS = "Địa chỉ" / "Address";
        OWNER = "Chủ sở hữu" / "Owner";
        AUTH_CERTS = "Chứng thư xác thực" / "Auth certificates";
        VALID = "Hiệu lực" / "Valid";
        REVOKED = "Đã thu hồi" / "Revoked";
        PROVIDER = "Bên cung cấp" / "Provider";
        DESCRIPTION = "Mô tả" / "Description";
        IN_CATALOGUE = "Có trong danh mục" / "In the catalogue";
        PERSONAL_DATA = "Dữ liệu cá nhân" / "Personal data";
        GROUPS = "Nhóm toàn cục" / "Global groups";
        GROUP_MEMBERS = "Thành phần" / "Members";
        ADD_TO_GROUP = "Thêm vào nhóm" / "Add to the group";
        REMOVE = "Gỡ bỏ" / "Remove";
        SUBSYSTEM = "Hệ thống con" / "Subsystem";
        ISSUE_TOKEN = "Cấp mã ghi danh" / "Issue an enrollment token";
        SERVER_ID = "Mã máy chủ" / "Server code";
        VALID_HOURS = "Hiệu lực (giờ)" / "Valid for (hours)";
        TOKEN_ONCE = "Mã chỉ hiện một lần: hãy trao cho cơ quan qua kênh riêng" / "Shown once: hand it to the agency out of band";
        OUTSTANDING = "Mã còn hiệu lực" / "Usable tokens";
        EXPIRES = "Hết hạn" / "Expires";
        NO_ALARMS = "Không có cảnh báo: mọi điểm kiểm tra đều nhất quán" / "No alarms: every checkpoint was consistent";
        SERVER = "Máy chủ" / "Server";
        WHEN = "Thời điểm (UTC)" / "When (UTC)";
        REASON = "Lý do" / "Reason";
        NONE = "Không có" / "None";
        YES = "có" / "yes";
        NO = "không" / "no";
        INSTANCE_CA = "CA của hệ thống" / "The instance's CA";
        FINGERPRINT = "Dấu vân tay SHA-256" / "SHA-256 fingerprint";
        SET_BACKEND = "Đặt máy chủ nghiệp vụ" / "Set the backend";
        BACKEND_URL = "Địa chỉ máy chủ nghiệp vụ" / "Backend URL";
        TIMEOUT_MS = "Thời gian chờ (ms)" / "Timeout (ms)";
        SELF_AUDIT = "Tự kiểm tra nhật ký" / "The log's self-audit";
        CHECKPOINTS = "Điểm kiểm tra đã chứng thực" / "Witnessed checkpoints";
        RECORDS = "Bản ghi" / "Records";
        ROOT = "Gốc Merkle" / "Merkle root";
        WITNESSED = "Chứng thực lúc" / "Witnessed at";
        SAVE = "Lưu" / "Save";
        ADD = "Thêm" / "Add";
        ISSUE = "Cấp mã" / "Issue";
        SIGN_IN = "Đăng nhập" / "Sign in";
        SIGN_OUT = "Đăng xuất" / "Sign out";
        SIGNED_IN_AS = "Đăng nhập với" / "Signed in as";
        SKIP = "Bỏ qua, đến nội dung chính" / "Skip to content";
        BACK = "Quay lại" / "Back";
        SESSION_EXPIRED = "Phiên đăng nhập đã hết hạn. Vui lòng đăng nhập lại." / "Your session expired. Sign in again.";
        OFFICERS_CONSOLE = "bàn điều khiển của cán bộ" / "officers' console";
        OPERATORS_CONSOLE = "bàn điều khiển vận hành" / "operator's console";
        REGISTRY_TOKEN = "Mã vận hành (cán bộ hoặc quan sát viên)" / "Operator token (officer or observer)";
        SERVER_TOKEN = "Mã vận hành (quản trị hoặc quan sát viên)" / "Operator token (admin or observer)";
        SIGN_IN_OIDC = "Đăng nhập bằng tài khoản của cơ quan" / "Sign in with your organisation's account";
        OR_TOKEN = "Hoặc bằng mã vận hành:" / "Or with an operator token:";
        NO_REQUESTS = "Không có yêu cầu nào." / "No requests.";
        SUBMITTED = "Gửi lúc" / "Submitted";
        NOTE = "Ghi chú" / "Note";
        NOTE_FOR_AUDIT = "Ghi chú cho nhật ký thao tác" / "Note for the audit log";
        APPROVE = "Phê duyệt" / "Approve";
        REJECT = "Từ chối" / "Reject";
        AUTH_KEY = "Khóa xác thực" / "Auth key";
        SIGNING_KEY = "Khóa ký" / "Signing key";
        WHO = "Người thực hiện" / "Who";
        DETAIL = "Chi tiết" / "Detail";
        GLOBAL_CONF = "Cấu hình toàn cục" / "Global configuration";
        AUTH_CERT = "Chứng thư xác thực" / "Auth certificate";
        MAINTENANCE = "Chế độ bảo trì" / "Maintenance mode";
        HEALTH = "Kiểm tra sức khỏe" / "Health checks";
        CHECK = "Hạng mục" / "Check";
        STATE = "Tình trạng" / "State";
        REGISTERED_HERE = "Đăng ký tại máy chủ này" / "Registered here";
        BODIES_LOGGED = "Ghi nội dung thông điệp" / "Bodies logged";
        PINNED = "Hệ thống được ghim" / "Pinned systems";
        BACKEND = "Máy chủ nghiệp vụ" / "Backend";
        PROVIDED_HERE = "Cung cấp tại đây" / "Provided here";
        GRANT_ACCESS = "Cấp quyền truy cập" / "Grant access";
        GRANT = "Cấp quyền" / "Grant";
        REVOKE = "Thu hồi" / "Revoke";
        SERVICE = "Dịch vụ" / "Service";
        METHOD = "Phương thức (để trống: cả dịch vụ)" / "Method (empty: the whole service)";
        CLIENT_OR_GROUP = "Hệ thống con khách hoặc nhóm" / "Client subsystem or group";
        NO_GRANTS = "Chưa cấp quyền nào: mọi lời gọi bị từ chối (mặc định từ chối)." / "No grants: every call is refused (deny by default).";
        NO_ACTIONS = "Chưa có thao tác nào." / "No operator action yet.";
        RESULT = "Kết quả" / "Result";
        SIDE = "Phía" / "Side";
        BYTES = "Byte" / "Bytes";
    }
}
